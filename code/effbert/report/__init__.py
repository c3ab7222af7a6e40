"""Result tables (pandas -> CSV and Markdown) with the published numbers beside ours."""
