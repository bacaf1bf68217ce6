"""Remote vision APIs: the job-wide quota, HTTP clients, and a fake server for tests."""
