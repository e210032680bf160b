"""Images kept for audits: the JPEG of every defect (and uncertain frame, and a sample of passes) with its event
id, bounded per camera by age and bytes (:mod:`.store`), written off the inference thread (:mod:`.keeper`).
docs/images.md is the user's page."""
