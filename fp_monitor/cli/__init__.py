"""The command line: the typer app, one thin command per verb (parse, call one use case,
render), and `main`, the one place that turns errors into exit codes.
"""
