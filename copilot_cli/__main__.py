from copilot_cli import main

main()
