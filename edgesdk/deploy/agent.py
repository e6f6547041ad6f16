"""Compatibility path: the deploy agent is `edgesdk.runtime.agent`, part of the board package (edgesdk-runtime).

`from edgesdk.deploy import agent` and `import edgesdk.deploy.agent` still work on the host: this name is the
same module object, so attributes set on it (tests' monkeypatching) reach the agent itself.
"""

from __future__ import annotations

import sys

from edgesdk.runtime import agent as _agent

sys.modules[__name__] = _agent
