"""python -m cxr.report EXPERIMENT_FOLDER: (re)writes the folder's report.md
(`cxr.pipeline.report_markdown`).
"""

from pathlib import Path

from cxr.pipeline.report_markdown import write_report
from cxr.run import cli
from cxr.run.errors import UserError, exit_on_user_error


def get_args_parser():
    parser = cli.command_parser("python -m cxr.report", "report.md of an experiment folder")
    parser.add_argument("folder", help="a folder written by python -m cxr.experiment")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if not (Path(args.folder) / "experiment.json").is_file():
        raise UserError(f"{args.folder} holds no experiment.json: not an experiment folder")
    print(f"wrote {write_report(args.folder)}")


if __name__ == "__main__":
    exit_on_user_error(main)
