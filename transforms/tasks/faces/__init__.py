"""The face work: detection, aligned crops, embeddings, matching and the faces table's
rows (registered as steps in `transforms.tasks.face_steps`)."""
