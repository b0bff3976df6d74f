from tlx.cli.app import main

main()
