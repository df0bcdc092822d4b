"""`python -m himdsl ...`: the same command line as the `himdsl` script, for
environments where the script is not on PATH."""
from himdsl.cli import main

main()
