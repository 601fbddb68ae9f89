import sys

from harness import cli_errors, interrupts
from harness.app import finished_points, main

if __name__ == "__main__":
    interrupts.install()
    try:
        cli_errors.run(main)
    except KeyboardInterrupt:
        # Every finished point is already on disk (atomic writes): say so in one line, not a
        # traceback, and exit as shells expect after SIGINT.
        done, total = finished_points()
        print(
            f"harness: interrupted after {done} of {total} points; run the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
