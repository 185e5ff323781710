"""Pages: rendering and the chart keys every page shares."""
