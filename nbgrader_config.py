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
# nbclient waits only 4 s for a cell's output messages after its reply; a loaded machine
# (a class graded in parallel) can be slower than that, which would fail a whole notebook.
c.Execute.iopub_timeout = 120
c.ExecutePreprocessor.iopub_timeout = 120

# Any cell may print a progress bar; none of it belongs in a release.
c.ClearOutput.enabled = True

# --- Autograding guard -----------------------------------------------------------------
# Points are not decided here: tools/grade.py replays every test cell outside the student's
# kernel (tools/verdict.py) and writes those points into the gradebook. This guard only keeps
# the graded notebook honest for the student's feedback: a submission that swallows exceptions
# inside the kernel (IPython's set_custom_exc, or replacing the shell's showtraceback) would
# otherwise hide its failing checks there. Before any graded test cell runs, it undoes both.
from nbgrader.preprocessors import NbGraderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, DeduplicateIds,  # noqa: E402
                                    OverwriteCells, OverwriteKernelspec)

GUARD = (
    '_ip = __import__("IPython").get_ipython(); '
    '[vars(_ip).pop(_k, None) for _k in ("set_custom_exc", "showtraceback", "_showtraceback", "showsyntaxerror")]; '
    "_ip.set_custom_exc((), None); del _ip  # sclecture: exceptions in test cells are reported"
)


class GuardTestCells(NbGraderPreprocessor):
    def preprocess_cell(self, cell, resources, index):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not cell.source.startswith(GUARD):
            cell.source = GUARD + "\n" + cell.source
        return cell, resources


c.Autograde.sanitize_preprocessors = [
    ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, GuardTestCells, CheckCellMetadata,
]
