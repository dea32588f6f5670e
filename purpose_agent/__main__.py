"""``python -m purpose_agent``: the ``purpose-agent`` command without the console script."""

from purpose_agent.cli import main

if __name__ == "__main__":
    main()
