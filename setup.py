"""Packaging for reslstm_tf: residual stacked LSTMs for video action recognition."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

INSTALL_REQUIRES = [
    "tensorflow>=2.21",
    "keras>=3.15",
    "numpy>=1.26",
    "opencv-contrib-python-headless>=4.10",
    "absl-py>=2.1",
    "tensorboard>=2.21",
    "h5py>=3.10",
    "tqdm>=4.66",
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8.0",
        "hypothesis>=6.100",
        "ruff>=0.6",
    ],
}

setup(
    name="reslstm-tf",
    version="0.1.0",
    description=(
        "Residual stacked LSTMs for video action recognition "
        "(Lakhal et al., ECCV Workshops 2018) in Keras 3 / TensorFlow"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["reslstm_tf", "reslstm_tf.*"]),
    include_package_data=True,
    package_data={"reslstm_tf": ["resources/*", "resources/**/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "reslstm-demo=reslstm_tf.cli.demo:run",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
