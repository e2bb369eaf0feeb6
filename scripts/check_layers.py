#!/usr/bin/env python3
"""Checks that core/ is layered: each folder of core/ is a layer, and a file may include (#include "core/...")
only files of its own layer or of a lower one. cuda/ (the CUDA backend) sits at the level of core/ops/; cli/ and
tests/ sit above every layer and are not checked. docs/ARCHITECTURE.md describes the layers.

    python3 scripts/check_layers.py [REPO_ROOT]

Exits 0 when every include points to the same or a lower layer; otherwise 1, naming each offending include
(file:line, the include, both layers). An include of a core/ file that is in no layer (directly in core/, or in
an unknown folder) is an error too.

It also checks that a model family's name (the `f.name = "..."` of core/formats/family_*.cpp) appears as a
string literal in no file of core/, cli/ or cuda/ but the family files: everything else asks the family table.
"""
import os
import re
import sys

# The layers, lowest first. A file in LAYERS[i] may include files of LAYERS[0..i].
LAYERS = [
    "base",      # errors, tensors, RNG, file-system / JSON / string helpers
    "formats",   # safetensors, GGUF reading, HF config.json, the model families (family_*.cpp), checkpoints
    "text",      # tokenizers and Unicode tables
    "data",      # datasets: sources, HDF5 cache, batch stream, length statistics
    "ops",       # the op seam (backend.h) and the CPU reference backend
    "model",     # the transformer forward/backward, LoRA adapters, decoding
    "metrics",   # BLEU, NIST, ROUGE-L, CIDEr, METEOR, GLUE metrics
    "session",   # recipes, the session a command opens from one, the classification task
    "train",     # optimizer, trainer, training state and log, lora.init_from
    "eval",      # `lora eval` and `lora generate`
    "commands",  # the other subcommands' library code: merge, export, info, validate, prepare, init
]
# Folders outside core/ that are held to a layer: the CUDA backend implements the op seam.
OUTSIDE = {"cuda": "ops"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"core/([^"]+)"')
FAMILY_NAME = re.compile(r'^\s*f\.name\s*=\s*"([^"]+)";')
FAMILY_FILE = re.compile(r"^core/formats/family_[a-z0-9_]+\.cpp$")
SOURCES = (".h", ".cpp", ".cu", ".cuh")


def layer_of_include(path):
    """The layer of an included "core/<folder>/<file>", or None."""
    parts = path.split("/")
    return parts[0] if len(parts) == 2 and parts[0] in LAYERS else None


def family_name_errors(root):
    """Each `"<family>"` string outside the family files, as an error."""
    sources = []
    for top in ("core", "cli", "cuda"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            sources += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(SOURCES)]
    families = []
    for full in sources:
        if FAMILY_FILE.match(os.path.relpath(full, root).replace(os.sep, "/")):
            with open(full, encoding="utf-8") as f:
                families += [m.group(1) for m in map(FAMILY_NAME.match, f) if m]
    if not families:
        return ["core/formats/family_*.cpp: no family names found (expected lines f.name = \"...\";)"]
    literal = re.compile('"(' + "|".join(re.escape(n) for n in families) + ')"', re.IGNORECASE)
    errors = []
    for full in sources:
        rel = os.path.relpath(full, root).replace(os.sep, "/")
        if FAMILY_FILE.match(rel):
            continue
        with open(full, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                m = literal.search(line)
                if m:
                    errors.append(f"{rel}:{lineno}: names the model family {m.group(0)}; ask the family table "
                                  "(core/formats/family.h) by feature instead")
    return errors


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    rank = {name: i for i, name in enumerate(LAYERS)}
    errors = []
    checked = 0
    dirs = [("core", None)] + [(d, layer) for d, layer in OUTSIDE.items()]
    for top, fixed_layer in dirs:
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if not name.endswith(SOURCES):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                if fixed_layer is not None:
                    layer = fixed_layer
                else:
                    parts = rel.split(os.sep)
                    layer = parts[1] if len(parts) == 3 and parts[1] in LAYERS else None
                    if layer is None:
                        errors.append(f"{rel}: not in a layer folder of core/ ({', '.join(LAYERS)})")
                        continue
                checked += 1
                with open(full, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = layer_of_include(m.group(1))
                        if target is None:
                            errors.append(f'{rel}:{lineno}: "core/{m.group(1)}" is in no layer')
                        elif rank[target] > rank[layer]:
                            errors.append(f'{rel}:{lineno}: "core/{m.group(1)}" points up, from layer {layer} '
                                          f'to layer {target}')
    errors += family_name_errors(root)
    for e in errors:
        print(e)
    if errors:
        print(f"check_layers: {len(errors)} error(s): includes that break the layer order {' < '.join(LAYERS)}, "
              "or family names outside the family files")
        return 1
    print(f"check_layers: {checked} files, every include points to the same or a lower layer "
          f"({' < '.join(LAYERS)}), and family names appear only in the family files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
