"""The run report: one self-contained HTML file with plots and examples."""
