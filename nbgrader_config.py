"""nbgrader configuration: this repository is the course directory.

Lessons with solutions and hidden tests live in `solutions/`; the student releases that
`nbgrader generate_assignment` writes live in `notebooks/`. See the README's instructor
section for the grading workflow.
"""

c = get_config()  # noqa: F821 - provided by nbgrader

c.CourseDirectory.course_id = "sclecture"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# Lessons train small models on a CPU: give every cell time enough. Autograding honours
# SCLECTURE_QUICK=1 (fewer epochs), which the grading command sets.
c.ExecutePreprocessor.timeout = 600
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True

# Any cell may print a progress bar; none of it belongs in a release.
c.ClearOutput.enabled = True
