from sgtool.cli import main

main()
