"""`maelab pretrain` with extra encoder presets, without touching src/.

--model fm_e{dim}_d{depth}_h{heads}_p{patch}  registers an MAEConfig for 28x28x1 with that encoder
(decoder defaults 128/2/4, overridable with the normal --decoder-* flags), then runs maelab's CLI.
"""
import re
import sys

from maelab.models import registry
from maelab.models.mae import MAEConfig

for i, a in enumerate(sys.argv):
    name = a.split("=", 1)[1] if a.startswith("--model=") else (sys.argv[i + 1] if a == "--model" else None)
    m = re.fullmatch(r"fm_e(\d+)_d(\d+)_h(\d+)_p(\d+)", name or "")
    if m:
        e, d, h, p = map(int, m.groups())
        registry._PRESETS[name] = MAEConfig(img_size=(28, 28), patch_size=p, in_chans=1, embed_dim=e, depth=d,
                                            num_heads=h, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)

from maelab.cli import main  # noqa: E402

sys.exit(main(["pretrain", *sys.argv[1:]]))
