"""Replace one `## ` section of a generated markdown file, keeping the others.

The bench and fuzz scripts each own one section of a document; this is the one place that
knows how sections are found, so two scripts can never disagree about it.
"""

import os

HEADER = "{title}\n\nEvery number here comes from a script run; none is typed in.\n\n"


def replace_section(path, heading_prefix, section, title="# Benchmarks"):
    """Put `section` (which starts with its `## ` heading) in place of the section whose heading
    starts with `heading_prefix`, or append it; create the file if needed."""
    text = open(path).read() if os.path.exists(path) else HEADER.format(title=title)
    start = text.find(heading_prefix)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        # One blank line between sections, whatever the section's own trailing newlines.
        text = text[:start] + section.rstrip("\n") + "\n" + ("" if end < 0 else "\n" + text[end + 1:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)
