"""`python -m vggdeploy`: the same entry point as the `vggdeploy` console script."""

from vggdeploy.cli import main

if __name__ == "__main__":
    main()
