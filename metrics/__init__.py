"""Pure text scorers (no Streamlit, no I/O besides loading models): see `base` for the contract and
`profiles` for the light and full scorer sets."""
