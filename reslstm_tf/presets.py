"""Architecture presets of the recurrent head, as plain data: Res-LSTM and plain LSTM, depth 2-4.

A preset fixes only the architecture of the recurrent head. What a model was
trained on (dataset, backbone, features, weights) lives in the zoo manifest
(`zoo/manifest.json`), which names one of these presets.
"""

_DEFAULTS = {
    # 1024 = the I3D feature size, so every shortcut of the Res-LSTM is an identity.
    "units": 1024,
    # Segments per video, the paper's T; the ablations vary it from 5 to 35.
    "num_steps": 16,
    "dropout": 0.5,
}


def _preset(num_layers, residual):
    kind = "Res-LSTM" if residual else "plain stacked LSTM"
    return {
        "description": f"{kind}, {num_layers} layers of {_DEFAULTS['units']} units",
        "num_layers": num_layers,
        "residual": residual,
        **_DEFAULTS,
    }


ARCHITECTURES = {
    "res2": _preset(2, True),
    "res3": _preset(3, True),
    "res4": _preset(4, True),
    "lstm2": _preset(2, False),
    "lstm3": _preset(3, False),
    "lstm4": _preset(4, False),
}


def get_architecture(name):
    """Returns a copy of the named architecture preset, or raises a ValueError listing them."""
    if name not in ARCHITECTURES:
        import difflib

        close = difflib.get_close_matches(str(name), ARCHITECTURES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"preset must be one of {', '.join(map(repr, ARCHITECTURES))}. "
            f"Received: preset={name!r}.{hint}"
        )
    return dict(ARCHITECTURES[name])
