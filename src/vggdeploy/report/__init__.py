"""Reporting: everything that draws. Stages return data; these modules turn it into rich
tables, Markdown, JSON/CSV and plots, and progress reaches the terminal through callbacks."""
