"""`gamerec`: the project's command line.

- `gamerec materialize`: rebuild what is stale or missing, and everything downstream of it
  (see `gamerec_assets.materialize`).
- `gamerec settings`: every setting, its variable, default and meaning.
- `gamerec recommend --user ID` / `--games TITLE ...` / `--game-ids ID ...`,
  `gamerec similar --game TITLE` / `--game-id ID`: top-K games from the artifacts alone
  (`gamerec_assets.core.recommend`). These import neither Dagster nor torch, so they answer in
  well under a second.
- `gamerec verify`: every published file against its manifest and lineage, one line per problem.
- `gamerec rollback`: serve the previous kept set again (`--list` shows them).

Each command imports what it needs when it runs. Settings come from the environment and from
`.env` in the working directory, as for `dagster` commands. A failure is one line on stderr
naming what to change; `gamerec --debug ...` shows the traceback as well.
"""

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from dotenv import dotenv_values

USAGE_ERROR = 2
"""Exit status for a bad setting, argument or published set: what the user must change."""


def load_dotenv_file(path: Path = Path(".env")) -> None:
    """Read `.env` from the working directory as `dagster dev` and `dagster` commands do
    (its values win), so both tools declare the same configuration."""
    if path.is_file():
        values = {k: v for k, v in dotenv_values(path).items() if v is not None}
        os.environ.update(values)
        print(f"Loaded {', '.join(sorted(values))} from {path}", file=sys.stderr)


def materialize_command(args: argparse.Namespace) -> int:
    from gamerec_assets.materialize import materialize_command as run

    load_dotenv_file()
    return run(args)


def _artifacts_folder(args: argparse.Namespace) -> Path:
    load_dotenv_file()
    return Path(args.artifacts or os.environ.get("ARTIFACTS_DIR") or "artifacts")


def _recommender(args: argparse.Namespace):
    from gamerec_assets.core.recommend import Recommender

    return Recommender.load(_artifacts_folder(args))


def _print(recommendations, as_json: bool, heading: str) -> None:
    from gamerec_assets.core.recommend import as_dicts

    if as_json:
        print(json.dumps(as_dicts(recommendations), default=str))
        return
    print(heading)
    width = max((len(r.title) for r in recommendations), default=5)
    for rank, r in enumerate(recommendations, start=1):
        print(f"{rank:>3}. {r.title:<{width}}  {r.score:.4f}")


def recommend_command(args: argparse.Namespace) -> int:
    games, game_ids = args.games or [], args.game_ids or []
    if (args.user is None) == (not games and not game_ids):
        raise ValueError("give --user ID, or the games a new player owns (--games, --game-ids)")
    recommender = _recommender(args)
    if args.user is not None:
        found = recommender.for_user(args.user, args.k)
        heading = f"Top {args.k} for user {args.user} (games they own are left out):"
    else:
        found = recommender.for_new_player(games, args.k, game_ids=game_ids)
        owned = len(games) + len(game_ids)
        heading = f"Top {args.k} for a new player who owns {owned} game(s):"
    _print(found, args.json, heading)
    return 0


def similar_command(args: argparse.Namespace) -> int:
    found = _recommender(args).similar(args.game, args.k, game_id=args.game_id)
    named = repr(args.game) if args.game is not None else f"game id {args.game_id}"
    _print(found, args.json, f"The {args.k} games nearest to {named}:")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from gamerec_assets.core.artifact_sets import verify_artifacts

    problems, summary = verify_artifacts(_artifacts_folder(args), every_set=args.all)
    for problem in problems:
        print(problem)
    print(summary)
    return 1 if problems else 0


def rollback_command(args: argparse.Namespace) -> int:
    from gamerec_assets.core.artifact_sets import describe_sets, rollback

    folder = _artifacts_folder(args)
    if args.list:
        print(describe_sets(folder))
        return 0
    before, now = rollback(folder, args.to)
    print(
        f"{folder}: serving set {now} (was {before}). Dagster still lists the newer set as "
        "serving_set's latest materialization; `gamerec materialize --all --select "
        "serving_set` publishes the staged files again"
    )
    return 0


def settings_command(args: argparse.Namespace) -> int:
    from gamerec_assets.core.settings import settings_table

    del args
    print(settings_table())
    return 0


ARTIFACTS_HELP = "artifacts folder (default: ARTIFACTS_DIR or artifacts)"


def _serving_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=int, default=10, help="how many games (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--artifacts", metavar="DIR", help=ARTIFACTS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gamerec", description=__doc__.splitlines()[0])
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on failure, show the traceback (and Dagster's full logs) besides the one line",
    )
    parser.add_argument("--debug", action="store_true", help=debug._actions[0].help)
    commands = parser.add_subparsers(dest="command", required=True)
    materialize = commands.add_parser(
        "materialize",
        parents=[debug],
        help="materialize what is stale or missing, and everything downstream of it",
        description=(
            "Fingerprint the raw input, compute which assets are stale or missing with Dagster's "
            "staleness machinery, print the plan and materialize exactly those and their "
            "downstream assets in one run, with their asset checks."
        ),
    )
    materialize.add_argument("--dry-run", action="store_true", help="print the plan only")
    materialize.add_argument(
        "--select",
        nargs="+",
        metavar="SELECTION",
        help="narrow to these assets (Dagster selection syntax, e.g. faiss_index, 'group:serving')",
    )
    materialize.add_argument(
        "--all", action="store_true", help="rebuild every selected asset, stale or not"
    )
    materialize.set_defaults(handler=materialize_command)

    recommend = commands.add_parser(
        "recommend",
        parents=[debug],
        help="top-K games for a known player, or for a new one from owned games",
    )
    recommend.add_argument("--user", metavar="USER_ID", help="a player in the training data")
    recommend.add_argument("--games", nargs="+", metavar="TITLE", help="titles a new player owns")
    recommend.add_argument(
        "--game-ids", nargs="+", metavar="ID", help="game ids a new player owns (with --games too)"
    )
    _serving_options(recommend)
    recommend.set_defaults(handler=recommend_command)

    settings = commands.add_parser(
        "settings",
        parents=[debug],
        help="every setting: variable, default and meaning (a markdown table)",
    )
    settings.set_defaults(handler=settings_command)

    similar = commands.add_parser(
        "similar", parents=[debug], help="games nearest to a game, by item vector"
    )
    game = similar.add_mutually_exclusive_group(required=True)
    game.add_argument("--game", metavar="TITLE")
    game.add_argument("--game-id", metavar="ID", help="the game's id (for a shared title)")
    _serving_options(similar)
    similar.set_defaults(handler=similar_command)

    verify = commands.add_parser(
        "verify",
        parents=[debug],
        help="check every published file against manifest.json and its lineage (exit 1 if not)",
    )
    verify.add_argument("--all", action="store_true", help="every kept set, not only the current")
    verify.add_argument("--artifacts", metavar="DIR", help=ARTIFACTS_HELP)
    verify.set_defaults(handler=verify_command)

    rollback = commands.add_parser(
        "rollback", parents=[debug], help="serve the previous published set again"
    )
    rollback.add_argument("--to", metavar="SET", help="a kept set (name or run id, or its start)")
    rollback.add_argument("--list", action="store_true", help="list the kept sets, change nothing")
    rollback.add_argument("--artifacts", metavar="DIR", help=ARTIFACTS_HELP)
    rollback.set_defaults(handler=rollback_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr (the traceback too with --debug)."""
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # `gamerec recommend ... | head -1`: the reader has what it wants
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's own flush at exit stays quiet
        return 0
    except KeyboardInterrupt:
        print(f"gamerec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the one place where errors become one line
        if args.debug:
            traceback.print_exc()
        code, line = describe_failure(error)
        hint = "" if args.debug or code == USAGE_ERROR else " (gamerec --debug shows where)"
        print(f"gamerec {args.command}: {line}{hint}", file=sys.stderr)
        return code


def describe_failure(error: Exception) -> tuple[int, str]:
    """(exit status, one line) for an error: the message alone for errors that name what to
    change (a setting, an input file, the artifacts, an id; exit 2) or a system error with
    its path (a full disk, a permission; exit 1); the type besides it for anything else."""
    from gamerec_assets.core.manifest import ArtifactSetError
    from gamerec_assets.core.recommend import UnknownGameError, UnknownUserError
    from gamerec_assets.core.settings import SettingError
    from gamerec_assets.core.sources import InteractionsFileError

    user_errors = (
        SettingError,
        InteractionsFileError,
        ArtifactSetError,
        UnknownGameError,
        UnknownUserError,
        ValueError,
    )
    message = str(error)
    if isinstance(error, OSError) and error.strerror and error.filename:
        message = f"{error.strerror}: {error.filename}"
    line = " ".join(message.split()) or type(error).__name__
    if isinstance(error, user_errors + (FileNotFoundError, NotADirectoryError)):
        return USAGE_ERROR, line
    if isinstance(error, OSError):
        return 1, line
    return 1, f"{type(error).__name__}: {line}"


if __name__ == "__main__":
    sys.exit(main())
