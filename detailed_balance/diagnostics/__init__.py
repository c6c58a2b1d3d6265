"""detailed_balance.diagnostics"""
