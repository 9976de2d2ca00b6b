"""``data merge``: concatenate Megatron indexed datasets in order, streaming (never loads a dataset into memory).

Typical use: merge the shards of a Slurm array run of ``data tokenize``::

    megatron-agentic data merge --inputs 'out/web-*-of-00064_text_document' --output-prefix out/web_text_document

The result equals megatron-core ``IndexedDatasetBuilder.add_index`` over the inputs, byte for byte. Inputs are
validated first (a corrupt shard aborts the merge), and the output is written under temporary names and renamed
when complete.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from data_tools.indexed.indexed_io import IndexedWriter, dataset_exists, read_index


def resolve_prefixes(items: Sequence[str | os.PathLike]) -> list[str]:
    """Turn prefixes, ``.idx``/``.bin`` paths and globs into dataset prefixes (globs expand in sorted order)."""
    out: list[str] = []
    for item in items:
        s = str(item)
        if s.endswith((".idx", ".bin")):
            s = s[:-4]
        if dataset_exists(s):
            out.append(s)
            continue
        matches = sorted(glob.glob(s + ".idx")) or sorted(glob.glob(s)) if glob.has_magic(s) else []
        prefixes = sorted({m[:-4] for m in matches if m.endswith((".idx", ".bin"))})
        if not prefixes:
            raise FileNotFoundError(f"{item}: no indexed dataset ({s}.bin/.idx) found")
        out.extend(prefixes)
    return out


def merge_datasets(
    inputs: Sequence[str | os.PathLike], output_prefix: str | os.PathLike, overwrite: bool = False
) -> dict:
    """Concatenate the datasets ``inputs`` (in order) into ``output_prefix``; returns counts of the result.

    Raises ``ValueError`` for a corrupt input or mismatched dtypes and ``FileExistsError`` when the output exists
    (unless ``overwrite``).
    """
    prefixes = resolve_prefixes(inputs)
    out = Path(output_prefix)
    if any(Path(p).resolve() == out.resolve() for p in prefixes):
        raise ValueError(f"{output_prefix}: the output is also an input")
    if dataset_exists(out) and not overwrite:
        raise FileExistsError(f"{out}.bin/.idx exists; pass --overwrite to replace it")
    infos = [read_index(p) for p in prefixes]
    problems = [e for info in infos for e in info.errors]
    if problems:
        raise ValueError("corrupt input dataset(s): " + "; ".join(problems))
    dtypes = {str(info.dtype) for info in infos}
    if len(dtypes) != 1:
        raise ValueError(f"inputs have different token dtypes: {sorted(dtypes)}")
    writer = IndexedWriter(out, infos[0].dtype)
    try:
        for info in infos:
            writer.add_dataset(info)
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    return {
        "inputs": len(infos),
        "documents": writer.num_documents,
        "sequences": writer.num_sequences,
        "tokens": writer.num_tokens,
        "output": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``data merge --inputs PREFIX... --output-prefix OUT``."""
    p = argparse.ArgumentParser(prog="megatron-agentic data merge", description=__doc__.splitlines()[0])
    p.add_argument("--inputs", nargs="+", required=True, help="dataset prefixes, .idx paths or globs, in order")
    p.add_argument("--output-prefix", required=True, help="prefix of the merged dataset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    try:
        res = merge_datasets(args.inputs, args.output_prefix, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"data merge: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"merged {res['inputs']} datasets -> {res['output']}.bin/.idx: {res['documents']:,} documents, "
        f"{res['tokens']:,} tokens"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
