# Writes openai_small.json: for each model.pt of the shared openai-small
# fixtures (see ../shared/fixtures/README.md), every tensor in state-dict
# order as [name, dtype, shape, sha256 of its float32 little-endian bytes
# (first 24 hex digits)], computed from what torch.load returns.
# Run: cd weights/pt/testdata && /usr/bin/python3 openai_small.py ../../../../shared/fixtures/openai-small
#      (Debian python3-torch 1.13)
import collections, hashlib, json, sys
import torch

root = sys.argv[1] if len(sys.argv) > 1 else "../../../../shared/fixtures/openai-small"
out = collections.OrderedDict()
for m in ["adm", "classifier", "glide", "glide-inpaint"]:
    sd = torch.load("%s/%s/model.pt" % (root, m), map_location="cpu")
    rows = []
    for k, v in sd.items():
        b = v.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        rows.append([k, str(v.dtype).replace("torch.", ""), list(v.shape), hashlib.sha256(b).hexdigest()[:24]])
    out[m] = rows
with open("openai_small.json", "w") as fh:
    fh.write("{\n")
    for i, (m, rows) in enumerate(out.items()):
        fh.write(' "%s": [\n' % m)
        fh.write(",\n".join("  " + json.dumps(r) for r in rows))
        fh.write("\n ]" + ("," if i < len(out) - 1 else "") + "\n")
    fh.write("}\n")
