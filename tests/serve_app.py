"""`streamlit run` for the browser tests, with a probe: whenever the file named by
RESATTN_PROBE_REQUEST appears, a background thread writes, to RESATTN_PROBE_REPLY, how many
forward/backward hooks are registered on all torch modules alive in the server, and how
many such modules there are. The browser test uses it to check that many sessions at once
leave no hook on any model. Everything else is plain `streamlit run`."""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path


def _probe(request: Path, reply: Path) -> None:
    from torch import nn

    from resattn.model.networks import ResidualAttentionNetwork

    while True:
        if request.exists():
            modules = [o for o in gc.get_objects() if isinstance(o, nn.Module)]
            hooks = sum(len(getattr(m, attr, {}) or {}) for m in modules
                        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                     "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                                     "_forward_pre_hooks_with_kwargs"))
            models = sum(1 for m in modules if isinstance(m, ResidualAttentionNetwork))
            tmp = reply.with_suffix(".tmp")
            tmp.write_text(json.dumps({"hooks": hooks, "modules": len(modules), "models": models}))
            os.replace(tmp, reply)
            request.unlink(missing_ok=True)
        time.sleep(0.2)


if __name__ == "__main__":
    request, reply = os.environ.get("RESATTN_PROBE_REQUEST"), os.environ.get("RESATTN_PROBE_REPLY")
    if request and reply:
        threading.Thread(target=_probe, args=(Path(request), Path(reply)), daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", *sys.argv[1:]]
    sys.exit(cli.main())
