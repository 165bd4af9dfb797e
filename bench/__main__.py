import os

# before any OpenMP runtime loads: spinning workers starve training beside a busy process (issue #11)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.run import main  # noqa: E402
from clusterforget._compat import exit_now  # noqa: E402

exit_now(main())  # no interpreter teardown: Arrow's thread pool can abort it (apache/arrow#34314)
