"""(placeholder: being built in its issue)"""
