"""litwatch: scheduled literature monitoring for PubMed and RSS/Atom feeds."""

__version__ = "0.1.0"
