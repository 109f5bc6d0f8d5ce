"""Collection from the public web: targeted, polite, resumable, and safe against SSRF."""
