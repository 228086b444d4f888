"""What people read: report.md and report.html rendered from the same blocks, and the plots."""
