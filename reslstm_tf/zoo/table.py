"""The zoo as people read it: a table of entries and one entry's card, as torchvision's
weights tables give accuracy with its protocol, size, input spec and licence per model.

`rows()` gives one dict per entry (name, aliases, accuracy, protocol, size, input, status,
licence); `format_list` lays them out as text columns, `format_info` one entry as a short
card. `reslstm-zoo list` and `reslstm-zoo info` print these.
"""

from reslstm_tf import zoo
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.zoo import names

COLUMNS = (
    ("name", "NAME"),
    ("aliases", "ALIASES"),
    ("accuracy", "ACCURACY"),
    ("protocol", "PROTOCOL"),
    ("size", "SIZE"),
    ("input", "INPUT"),
    ("status", "WEIGHTS"),
)
MISSING = "-"


def accuracy(entry):
    """(accuracy, protocol) of an entry's first metric, e.g. ("80.9 ± 5.3 %", "5-fold CV x 3").

    An entry without a measured metric but with the paper's figure gives that, marked as
    reported, not reproduced; an entry with neither gives ("-", "-").
    """
    for metric in entry.get("metrics") or []:
        if "mean" in metric:
            value = f"{100 * metric['mean']:.1f} ± {100 * metric.get('std', 0):.1f} %"
            if "folds" in metric:
                protocol = f"{metric['folds']}-fold CV x {metric.get('seeds', 1)} seeds"
            else:
                protocol = metric.get("name", "mean")
            return value, protocol
        if "top1" in metric:
            return f"{100 * metric['top1']:.1f} %", f"top-1, {metric.get('split', 'eval')}"
    reported = (entry.get("paper_reference") or {}).get("top1_percent") or {}
    if reported:
        key = next(iter(reported))
        return f"{reported[key]:.1f} %", f"paper ({key}), not reproduced"
    return MISSING, MISSING


def size_bytes(entry):
    """The bytes of an entry's published files (weights and deltas), or None if unrecorded."""
    records = [entry.get("weights") or {}, *(entry.get("deltas") or {}).values()]
    sizes = [r["bytes"] for r in records if isinstance(r, dict) and "bytes" in r]
    return sum(sizes) if sizes else None


def _size(entry):
    size = size_bytes(entry)
    return MISSING if size is None else f"{size / 1e6:.1f} MB"


def input_spec(entry):
    """The clip spec each stream reads, e.g. "rgb 16x16 @224" or "rgb+flow:farneback 4x16 @112".

    From the entry's `features` (each stream's serialised `ClipSpec`): segments x frames per
    segment at the crop size, flow streams with their flow method.
    """
    features = entry.get("features") or {}
    specs = {
        stream: ClipSpec.from_record(record)
        for stream, record in features.items()
        if isinstance(record, dict) and stream in ("rgb", "flow")
    }
    if not specs:
        return MISSING
    streams = "+".join(
        f"flow:{spec.flow_method}" if stream == "flow" else stream for stream, spec in specs.items()
    )
    shapes = {(s.num_segments, s.segment_len, s.frame_size) for s in specs.values()}
    shape = " | ".join(f"{k}x{length} @{size}" for k, length, size in sorted(shapes))
    return f"{streams} {shape}"


def _status(entry):
    return "published" if entry.get("weights") else "not published"


def rows(published_only=False):
    """One dict per zoo entry (columns of `COLUMNS` and `licence`, `description`)."""
    table = zoo.aliases()
    result = []
    for name in zoo.list():
        entry = zoo.info(name)
        if published_only and not entry.get("weights"):
            continue
        value, protocol = accuracy(entry)
        result.append(
            {
                "name": name,
                "aliases": ",".join(names.aliases_of(name, table)) or MISSING,
                "accuracy": value,
                "protocol": protocol,
                "size": _size(entry),
                "input": input_spec(entry),
                "status": _status(entry),
                "licence": entry.get("license", MISSING),
                "description": entry.get("description", ""),
            }
        )
    return result


def format_list(published_only=False, header=True):
    """The zoo as text columns, one row per entry; `header` adds the column titles."""
    table = rows(published_only)
    lines = [[title for _, title in COLUMNS]] if header else []
    lines += [[row[key] for key, _ in COLUMNS] for row in table]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )


def _weights_lines(entry):
    weights = entry.get("weights") or {}
    lines = []
    if weights.get("file"):
        lines.append(f"  weights  {weights['file']}  sha256 {weights['sha256']}")
    elif weights.get("checkpoint_sha256"):
        lines.append(f"  weights  {weights.get('source', '')}")
        lines.append(f"           checkpoint sha256 {weights['checkpoint_sha256']}")
    for stream, delta in sorted((entry.get("deltas") or {}).items()):
        lines.append(f"  {stream} delta  {delta['file']}  sha256 {delta['sha256']}")
    if entry.get("base"):
        lines.append(f"  base     {entry['base']}")
    return lines


def format_info(name):
    """A readable card of one entry: what it is, accuracy with protocol, input, files, licence.

    `reslstm-zoo info NAME --json` prints the whole manifest entry instead.
    """
    entry = zoo.info(name)
    table = zoo.aliases()
    value, protocol = accuracy(entry)
    arch = entry["architecture"]
    header = entry["name"] + (f"  (alias {entry['alias']!r})" if "alias" in entry else "")
    lines = [header, f"  {entry.get('description', '')}"]
    arch_text = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "kind")
    lines.append(f"  kind     {arch['kind']}: {arch_text}")
    dataset = entry["dataset"]
    title = dataset.get("title", dataset["name"])
    lines.append(f"  dataset  {title}, {dataset['num_classes']} classes")
    lines.append(f"  accuracy {value}  ({protocol})")
    for metric in (entry.get("metrics") or [])[:1]:
        if metric.get("protocol"):
            lines.append(f"           {metric['protocol']}")
    lines.append(f"  input    {input_spec(entry)}")
    lines.append(f"  size     {_size(entry)}  ({_status(entry)})")
    lines += _weights_lines(entry)
    aliases = names.aliases_of(entry["name"], table)
    former = names.former_aliases_of(entry["name"], table)
    if aliases:
        lines.append(f"  aliases  {', '.join(aliases)}")
    if former:
        lines.append(f"  formerly {', '.join(former)} (now pointing elsewhere)")
    if not entry.get("weights") and entry.get("recipe"):
        recipe = entry["recipe"]
        recipe = [recipe] if isinstance(recipe, str) else recipe
        lines.append("  recipe   (to produce the weights)")
        lines += [f"    {command}" for command in recipe]
    lines.append(f"  licence  {entry.get('license', MISSING)}")
    return "\n".join(lines)
