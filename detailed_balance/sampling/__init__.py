"""detailed_balance.sampling"""
