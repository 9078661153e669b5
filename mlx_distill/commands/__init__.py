"""One module per `mlx-distill` subcommand: HELP, add_arguments(parser), main(args) -> int."""
