"""detailed_balance.agents"""
