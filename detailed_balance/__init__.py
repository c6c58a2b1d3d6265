"""detailed-balance."""
