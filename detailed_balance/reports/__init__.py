"""detailed_balance.reports"""
