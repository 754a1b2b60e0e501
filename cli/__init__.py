"""Click commands: parse options into config dataclasses and call the library."""
