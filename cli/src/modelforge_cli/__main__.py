from modelforge_cli.main import app

app(prog_name="modelforge")
