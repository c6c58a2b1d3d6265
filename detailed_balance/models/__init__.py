"""detailed_balance.models"""
