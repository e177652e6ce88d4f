"""Polling: one poller per source family (`pubmed`: the PubMed queries and the notice
search; `crossref`; `feeds`: every feed kind) and `cycle`, the one poll cycle both
`litwatch poll` and `litwatch run` go through."""
