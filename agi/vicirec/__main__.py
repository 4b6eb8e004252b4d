from vicirec.commands.cli import main

raise SystemExit(main())
