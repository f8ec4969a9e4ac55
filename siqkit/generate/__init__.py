"""The ``generate`` stage: seeds -> teachers -> raw and parsed chain-of-thought traces."""
