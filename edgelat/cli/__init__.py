"""The ``edgelat`` command line: a thin click layer over the library."""

from edgelat.cli.base import main

# Each module attaches its commands to the groups in ``base``.
from edgelat.cli import agent as _agent  # noqa: F401,E402
from edgelat.cli import devices as _devices  # noqa: F401,E402
from edgelat.cli import phone as _phone  # noqa: F401,E402
from edgelat.cli import profile as _profile  # noqa: F401,E402
from edgelat.cli import lut as _lut  # noqa: F401,E402
from edgelat.cli import predict as _predict  # noqa: F401,E402
from edgelat.cli import predictor_build as _predictor_build  # noqa: F401,E402
from edgelat.cli import predictor_list as _predictor_list  # noqa: F401,E402
from edgelat.cli import search as _search  # noqa: F401,E402
from edgelat.cli import spaces as _spaces  # noqa: F401,E402
from edgelat.cli import quickstart as _quickstart  # noqa: F401,E402
from edgelat.cli import hub as _hub  # noqa: F401,E402
from edgelat.cli import jobs as _jobs  # noqa: F401,E402

__all__ = ["main"]
