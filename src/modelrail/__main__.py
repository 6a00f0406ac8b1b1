"""``python -m modelrail``: the command line where no ``modelrail`` script is installed.

The training job's image copies the package onto ``PYTHONPATH`` instead of installing
it, so its scheduled sweep runs ``python -m modelrail sweep``.
"""

from modelrail.entry.cli import run

if __name__ == "__main__":
    run()
