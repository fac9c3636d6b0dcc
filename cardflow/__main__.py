from cardflow.cli import main

main()
