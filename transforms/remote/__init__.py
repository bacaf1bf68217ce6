"""Remote vision APIs: one module per API, the backend registry, the step that calls
them, stored answers, the job-wide quota and HTTP calls with retries."""
