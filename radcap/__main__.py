from radcap.cli import main

raise SystemExit(main())
