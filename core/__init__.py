"""The domain core: metric catalog, binned statistics, version comparison, pricing.

No Streamlit, no SQL, no Ibis. `ui/` and `data_access/` import it; it imports neither.
"""
