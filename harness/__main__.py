from harness import cli_errors
from harness.app import main

if __name__ == "__main__":
    cli_errors.install()
    main()
