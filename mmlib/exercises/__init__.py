"""The notebooks' fill-in exercises: the learner writes the lines that carry a lesson's idea, and
a check says at once whether they are right (`mmlib.exercises.core`). One module per lesson
holds that lesson's exercises: what mmlib's own version is, the fresh inputs it is tried on,
and the mistakes a learner is likely to make, each with the one line that names it."""
