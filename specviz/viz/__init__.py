"""Views: step records -> plotly figures and HTML. Never imports torch or a tokenizer;
the UI passes the text labels in."""
