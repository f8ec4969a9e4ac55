from siqkit.cli import main

main()
